//! Where each node of the YAML document is: a field path → (line, column) index built from
//! saphyr-parser's events, so errors found after deserialisation (a dangling reference, a
//! duplicate name) can name the line of the offending node. Building it also rejects what serde
//! would silently accept or report without a path: YAML syntax errors and duplicate mapping keys.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, Span};

use super::ConfigError;

/// Field path → 1-based (line, column) of the node: of its key for a mapping entry, of the item
/// for a sequence element.
#[derive(Debug, Default)]
pub(super) struct Index {
    positions: HashMap<String, (usize, usize)>,
}

/// One open collection while walking the events.
enum Frame {
    /// `path` is `None` inside a node that has no field path (a complex mapping key).
    Seq { path: Option<String>, next: usize },
    Map {
        path: Option<String>,
        /// The path of the value about to come, once its key was read.
        pending: Option<Option<String>>,
        keys: HashSet<String>,
    },
}

impl Index {
    /// Indexes the first document of `text`.
    ///
    /// # Errors
    /// A YAML syntax error or a mapping key that appears twice, with its position.
    pub(super) fn build(text: &str, file: &str) -> Result<Index, ConfigError> {
        let mut index = Index::default();
        let mut stack: Vec<Frame> = Vec::new();
        for event in Parser::new_from_str(text) {
            let (event, span) = event.map_err(|e| {
                ConfigError::new(file, "", format!("invalid YAML: {}", e.info()))
                    .at(Some((e.marker().line(), e.marker().col() + 1)))
            })?;
            match event {
                Event::Scalar(value, ..) => {
                    index.node(&mut stack, &span, Some(&value), file)?;
                }
                Event::Alias(_) => {
                    index.node(&mut stack, &span, None, file)?;
                }
                Event::SequenceStart(..) => {
                    let path = index.node(&mut stack, &span, None, file)?;
                    stack.push(Frame::Seq { path, next: 0 });
                }
                Event::MappingStart(..) => {
                    let path = index.node(&mut stack, &span, None, file)?;
                    stack.push(Frame::Map { path, pending: None, keys: HashSet::new() });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    stack.pop();
                }
                // Only the first document is read (serde rejects several).
                Event::DocumentEnd => break,
                Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::Nothing => {}
            }
        }
        Ok(index)
    }

    /// Registers a node that starts at `span` and returns its path when it is a value (not a
    /// mapping key) that has one. `scalar` is the node's text when it is a scalar.
    fn node(
        &mut self,
        stack: &mut [Frame],
        span: &Span,
        scalar: Option<&str>,
        file: &str,
    ) -> Result<Option<String>, ConfigError> {
        let position = (span.start.line(), span.start.col() + 1);
        let path = match stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let item = path.as_ref().map(|p| format!("{p}[{next}]"));
                *next += 1;
                item
            }
            Some(Frame::Map { path, pending, keys }) => match pending.take() {
                Some(value_path) => value_path,
                None => {
                    // A key: its value's path is the parent's plus this key.
                    let key_path = match (path.as_ref(), scalar) {
                        (Some(parent), Some(key)) => {
                            let key_path = join(parent, key);
                            if !keys.insert(key.to_owned()) {
                                return Err(ConfigError::new(
                                    file,
                                    &key_path,
                                    format!("duplicate key `{key}`"),
                                )
                                .at(Some(position)));
                            }
                            self.positions.entry(key_path.clone()).or_insert(position);
                            Some(key_path)
                        }
                        _ => None,
                    };
                    *pending = Some(key_path);
                    // A key is not a value; a complex key's own content has no path.
                    return Ok(None);
                }
            },
        };
        if let Some(p) = &path {
            self.positions.entry(p.clone()).or_insert(position);
        }
        Ok(path)
    }

    /// The position of `path`, or of its nearest ancestor that has one (a node that came from
    /// an alias or a merge key has none of its own).
    pub(super) fn locate(&self, path: &str) -> Option<(usize, usize)> {
        let mut path = path;
        loop {
            if let Some(position) = self.positions.get(path) {
                return Some(*position);
            }
            if path.is_empty() {
                return None;
            }
            path = parent(path);
        }
    }
}

/// `parent.key`, or `key` at the root.
fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

/// The path one level up: `a.b[2]` → `a.b` → `a` → ``.
fn parent(path: &str) -> &str {
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    &path[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
version: 1
models:
  - name: a
    targets:
      - provider: p
        model: m
  - name: b
";

    #[test]
    fn indexes_keys_and_items() {
        let index = Index::build(DOC, "f").unwrap();
        assert_eq!(index.locate("version"), Some((1, 1)));
        assert_eq!(index.locate("models"), Some((2, 1)));
        assert_eq!(index.locate("models[0]"), Some((3, 5)));
        assert_eq!(index.locate("models[0].targets[0].model"), Some((6, 9)));
        assert_eq!(index.locate("models[1].name"), Some((7, 5)));
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(index.locate("models[1].targets[3].provider"), Some((7, 5)));
    }

    #[test]
    fn rejects_duplicate_keys() {
        let err = Index::build("version: 1\nmodels: []\nversion: 2\n", "f").unwrap_err();
        assert_eq!(err.to_string(), "f:3:1: version: duplicate key `version`");
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let err = Index::build("version: 1\nmodels: [a\n", "f").unwrap_err();
        assert!(err.line.is_some(), "{err}");
        assert!(err.message.starts_with("invalid YAML"), "{err}");
    }
}
