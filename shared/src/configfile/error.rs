//! The one error type of the config-file format.

use std::fmt;

/// A config file that cannot be read, parsed or validated, or a snapshot that cannot be printed.
///
/// Displays as `FILE:LINE:COL: PATH: MESSAGE`, e.g.
/// `llmgw.yaml:14:19: models[0].targets[0].provider: no provider named "opanai"`; the location is
/// left out when unknown (an I/O error), the path when the error concerns the whole file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Rendered(self))]
pub struct ConfigError {
    /// The file name as given to [`super::parse`] or [`super::load`].
    pub file: String,
    /// 1-based line of the offending node, when known.
    pub line: Option<usize>,
    /// 1-based column of the offending node, when known.
    pub column: Option<usize>,
    /// The field path, like `models[2].targets[0].provider`; empty for the whole file.
    pub path: String,
    /// What is wrong, without the location.
    pub message: String,
}

impl ConfigError {
    /// An error about the whole file or a path whose position is unknown.
    pub(crate) fn new(file: &str, path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            line: None,
            column: None,
            path: path.to_owned(),
            message: message.into(),
        }
    }

    /// Attaches a 1-based line and column.
    pub(crate) fn at(mut self, position: Option<(usize, usize)>) -> Self {
        if let Some((line, column)) = position {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }
}

struct Rendered<'a>(&'a ConfigError);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        f.write_str(&e.file)?;
        if let Some(line) = e.line {
            write!(f, ":{line}")?;
            if let Some(column) = e.column {
                write!(f, ":{column}")?;
            }
        }
        if !e.path.is_empty() {
            write!(f, ": {}", e.path)?;
        }
        write!(f, ": {}", e.message)
    }
}
