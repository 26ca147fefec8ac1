//! Credentials and key secrets. A provider credential stays a reference in the snapshot (the
//! edge resolves it), but a reference that cannot resolve is an error at load rather than a
//! failed request later. A key's secret is resolved here and kept only as its hash.

use std::path::PathBuf;

use crate::keys::hash_secret;
use crate::proto::{self, credential::Source};

use super::read::{Reader, Result};
use super::{CredentialRefs, SEALED_PLACEHOLDER, raw};

/// 12: enough for an operator to tell keys apart (`sk-llmgw-` + 3), far too little to guess one.
const SECRET_PREFIX_LEN: usize = 12;

impl Reader<'_> {
    /// A provider credential: the reference itself, once checked to resolve.
    pub(super) fn credential(&self, at: &str, c: &raw::Credential) -> Result<proto::Credential> {
        let source = match (&c.env, &c.file, &c.value, &c.sealed) {
            (Some(var), None, None, None) => {
                match self.credentials {
                    CredentialRefs::Check => {
                        self.env_var(&format!("{at}.env"), var)?;
                    }
                    CredentialRefs::Keep => self.env_var_name(&format!("{at}.env"), var)?,
                }
                Some(Source::Env(var.clone()))
            }
            (None, Some(file), None, None) if self.credentials == CredentialRefs::Keep => {
                if file.is_empty() {
                    return Err(self.err(&format!("{at}.file"), "must not be empty"));
                }
                Some(Source::File(file.clone()))
            }
            (None, Some(file), None, None) => {
                let path = self.read_file(&format!("{at}.file"), file)?.0;
                let path =
                    path.to_str().ok_or_else(|| self.err(&format!("{at}.file"), "path is not UTF-8"))?;
                Some(Source::File(path.to_owned()))
            }
            (None, None, Some(value), None) => {
                if value.trim().is_empty() {
                    return Err(self.err(&format!("{at}.value"), "must not be empty"));
                }
                Some(Source::Value(value.clone()))
            }
            // A credential the control plane holds sealed: no source, meaning "keep the stored one".
            (None, None, None, Some(placeholder)) if placeholder == SEALED_PLACEHOLDER => None,
            (None, None, None, Some(_)) => {
                return Err(self.err(
                    &format!("{at}.sealed"),
                    format!(
                        "sealed credentials cannot be written in a file: use env:, file: or value:, \
                         or `sealed: {SEALED_PLACEHOLDER}` to keep the stored credential"
                    ),
                ));
            }
            (None, None, None, None) => {
                return Err(self.err(at, "a credential needs one of env:, file: or value:"));
            }
            _ => return Err(self.err(at, "a credential takes exactly one of env:, file: or value:")),
        };
        Ok(proto::Credential { source })
    }

    /// The value of an environment variable that must be set and not blank.
    fn env_var(&self, at: &str, name: &str) -> Result<String> {
        self.env_var_name(at, name)?;
        match (self.env)(name) {
            Some(value) if !value.trim().is_empty() => Ok(value),
            Some(_) => Err(self.err(at, format!("environment variable {name} is empty"))),
            None => Err(self.err(at, format!("environment variable {name} is not set"))),
        }
    }

    /// Checks the form of an environment variable's name.
    fn env_var_name(&self, at: &str, name: &str) -> Result<()> {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(self.err(at, format!("invalid environment variable name \"{name}\"")));
        }
        Ok(())
    }

    /// Reads a `file:` reference, relative to the config file's directory; returns the path
    /// as resolved and the contents.
    fn read_file(&self, at: &str, file: &str) -> Result<(PathBuf, String)> {
        if file.is_empty() {
            return Err(self.err(at, "must not be empty"));
        }
        let path = self.base.map_or_else(|| PathBuf::from(file), |base| base.join(file));
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((path, text)),
            Err(e) => Err(self.err(at, format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// A key's secret, resolved now and trimmed (a trailing newline in a file is not part of it).
    fn secret(&self, at: &str, s: &raw::Secret) -> Result<String> {
        let value = match (&s.env, &s.file, &s.value) {
            (Some(var), None, None) => self.env_var(&format!("{at}.env"), var)?,
            (None, Some(file), None) => self.read_file(&format!("{at}.file"), file)?.1,
            (None, None, Some(value)) => value.clone(),
            (None, None, None) => return Err(self.err(at, "a secret needs one of env:, file: or value:")),
            _ => return Err(self.err(at, "a secret takes exactly one of env:, file: or value:")),
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(self.err(at, "the secret is empty"));
        }
        Ok(value.to_owned())
    }

    /// A key's `secret:` as stored: its SHA-256 and its first characters.
    pub(super) fn secret_digest(&self, at: &str, s: &raw::Secret) -> Result<(Vec<u8>, String)> {
        let secret = self.secret(at, s)?;
        Ok((hash_secret(&secret).to_vec(), prefix_of(&secret)))
    }
}

/// The first characters of a secret, shown to operators. Never more than half of it, so a
/// short (test) secret is not all but given away.
fn prefix_of(secret: &str) -> String {
    let n = SECRET_PREFIX_LEN.min(secret.chars().count() / 2);
    secret.chars().take(n).collect()
}
