//! The config-file format of CONFIG.md: one YAML document ⇄ [`proto::Snapshot`].
//!
//! [`parse`] and [`load`] read a file strictly: an unknown field, a wrong type or enum value, a
//! malformed name, a duplicate name, a reference to something not defined, a negative price or
//! an unresolvable credential is a [`ConfigError`] naming the field path and its line. Defaults
//! are written into the snapshot (`timeout_ms` 600000, `connect_timeout_ms` 5000, strategy
//! priority, weight 1, `fallback_on` `[connect, timeout, "429", "5xx"]`, `max_attempts` = the
//! number of targets capped at 3), so every consumer sees the same values.
//!
//! [`to_yaml`] prints a snapshot back in the same format; `parse` accepts what it prints.
//!
//! # Secrets
//! - Provider credentials stay references (`env:`, `file:`) or values (`value:`) in the
//!   snapshot; the edge resolves them. `parse` only checks that each variable is set and each
//!   file readable, so a typo fails at load rather than on the first request. Where the file is
//!   read on another machine than the edge's (`llmgw admin apply -f`), [`parse_with`] and
//!   [`load_with`] with [`CredentialRefs::Keep`] check only their form and keep them as written.
//! - A key's `secret:` (`env:`, `file:` or `value:`) is resolved at load, trimmed, and kept only
//!   as its SHA-256 (`secret_sha256`) and its first characters (`secret_prefix`: 12, never more
//!   than half the secret). A key without `secret:` is accepted with both left empty: that is
//!   what [`to_yaml`] prints, and the control plane matches such keys by name and keeps the
//!   hash it already holds. A standalone edge cannot authenticate with such a key.
//! - A credential sealed by the control plane prints as `sealed: <redacted>`
//!   ([`SEALED_PLACEHOLDER`]). `parse` reads that back as `Credential { source: None }`, which
//!   means "keep the stored credential"; no other `sealed:` value is accepted, so a secret can
//!   never be mistaken for a placeholder nor a placeholder stored as a secret.
//!
//! # Ids
//! A key's `id` is its name (standalone files have no id store); [`to_yaml`] prints no id.

mod error;
mod locate;
mod names;
mod raw;
mod read;
mod rfc3339;
mod secrets;
mod write;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::ConfigError;

use crate::proto;

/// How [`to_yaml`] prints a sealed credential, and the only `sealed:` value [`parse`] accepts.
pub const SEALED_PLACEHOLDER: &str = "<redacted>";

/// How [`parse_with`] and [`load_with`] treat provider credential references (`env:`, `file:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CredentialRefs {
    /// Each variable must be set and each file readable here, and a relative `file:` path is
    /// resolved against the config file's directory ([`load`]): the file is read where the edge
    /// runs (`llmgw edge --config`).
    #[default]
    Check,
    /// Only their form is checked and they are kept as written: the file is read on another
    /// machine than the edges that resolve them (`llmgw admin apply -f`). A relative `file:` path
    /// is then relative to the edge's working directory.
    Keep,
}

/// Options of [`parse_with`] and [`load_with`]; the default is what [`parse`] and [`load`] do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Provider credential references. Key `secret:` values are resolved and hashed either way.
    pub credentials: CredentialRefs,
}

/// Parses and validates a config file's text.
///
/// `source` names the file in errors. `env` looks up environment variables (production passes
/// `&|name| std::env::var(name).ok()`). Relative `file:` references are read relative to the
/// current directory; [`load`] reads them relative to the config file.
///
/// # Errors
/// The first problem found, with its field path and line; see the module docs.
pub fn parse(
    text: &str,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<proto::Snapshot, ConfigError> {
    read::parse(text, source, None, env, &ParseOptions::default())
}

/// [`parse`] with options.
///
/// # Errors
/// As [`parse`].
pub fn parse_with(
    text: &str,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
    options: &ParseOptions,
) -> Result<proto::Snapshot, ConfigError> {
    read::parse(text, source, None, env, options)
}

/// Reads and parses the config file at `path` with the process environment; relative `file:`
/// references are resolved against the file's directory (and stored resolved in the snapshot,
/// so the edge reads the same files).
///
/// # Errors
/// The file cannot be read, or [`parse`] rejects it.
pub fn load(path: &Path) -> Result<proto::Snapshot, ConfigError> {
    load_with(path, &ParseOptions::default())
}

/// [`load`] with options; key `secret: { file: … }` references are read relative to the file's
/// directory either way.
///
/// # Errors
/// As [`load`].
pub fn load_with(path: &Path, options: &ParseOptions) -> Result<proto::Snapshot, ConfigError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&source, "", format!("cannot read the config file: {e}")))?;
    let base = path.parent().filter(|p| !p.as_os_str().is_empty());
    read::parse(&text, &source, base, &|name| std::env::var(name).ok(), options)
}

/// Parses an RFC 3339 time (`2027-01-01T00:00:00Z`, `…+02:00`, fractions dropped) into Unix
/// seconds: the form of `expires_at`, for tools that take times the same way.
#[must_use]
pub fn parse_time(s: &str) -> Option<i64> {
    rfc3339::parse(s)
}

/// Formats Unix seconds as RFC 3339 (`2027-01-01T00:00:00Z`), as `expires_at` prints; `None`
/// outside years 0000–9999.
#[must_use]
pub fn format_time(unix: i64) -> Option<String> {
    rfc3339::format(unix)
}

/// Prints a snapshot in the config-file format (for `llmgw admin get … -o yaml`).
///
/// Nothing secret is printed except `value:` credentials, which only standalone files hold:
/// keys print without `secret:` or id, sealed credentials as [`SEALED_PLACEHOLDER`]. Fields at
/// their wire default (0, empty) are left out; `parse` reads them back as the same defaults.
///
/// # Errors
/// A field holds a value the file cannot express (an unknown enum number, an `expires_at`
/// beyond year 9999, a malformed `fallback_on` entry).
pub fn to_yaml(snapshot: &proto::Snapshot) -> Result<String, ConfigError> {
    write::to_yaml(snapshot)
}
