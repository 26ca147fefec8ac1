//! Output formats: `-o table` for people, `-o json` and `-o yaml` for scripts. The JSON shapes
//! of CONFIG.md are structs with those exact fields, in `commands/*`; this module only prints.

use std::io::Write;

use serde::Serialize;

use crate::AdminError;

/// The `-o` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// One YAML document (`get` prints the config-file format).
    Yaml,
}

/// Writes `value` as pretty JSON or as YAML; `Table` is the caller's to handle.
pub(crate) fn structured<T: Serialize>(
    out: &mut (dyn Write + Send),
    output: Output,
    value: &T,
) -> Result<(), AdminError> {
    let text = match output {
        Output::Json | Output::Table => json(value)?,
        Output::Yaml => serde_yaml_ng::to_string(value).map_err(|e| AdminError::Render(e.to_string()))?,
    };
    write_all(out, &text)
}

pub(crate) fn json<T: Serialize>(value: &T) -> Result<String, AdminError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| AdminError::Render(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

pub(crate) fn write_all(out: &mut (dyn Write + Send), text: &str) -> Result<(), AdminError> {
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Columns aligned with two spaces, headers in capitals; cells never span lines.
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&'static str]) -> Self {
        Table { header: header.to_vec(), rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(|c| cell(&c)).collect());
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub(crate) fn render(&self) -> String {
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        let lines: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        let mut widths = vec![0; self.header.len()];
        for line in &lines {
            for (w, c) in widths.iter_mut().zip(line.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut text = String::new();
        for line in lines {
            let mut l = String::new();
            for (i, c) in line.iter().enumerate() {
                if i > 0 {
                    l.push_str("  ");
                }
                l.push_str(c);
                let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(c.chars().count());
                l.extend(std::iter::repeat_n(' ', pad));
            }
            text.push_str(l.trim_end());
            text.push('\n');
        }
        text
    }
}

/// A table cell: empty shows as `-`; control characters (a newline in a server's string, an
/// escape sequence) are escaped so a cell never breaks the table or the terminal.
fn cell(s: &str) -> String {
    if s.is_empty() {
        return "-".to_owned();
    }
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Unix seconds as RFC 3339, or the number when out of range; 0 is `-`.
pub(crate) fn time(unix: i64) -> String {
    match unix {
        0 => String::new(),
        t => llmgw_shared::configfile::format_time(t).unwrap_or_else(|| t.to_string()),
    }
}

/// How long ago `then_ms` was, from `now_ms`: `45s ago`, `3m ago`, `2h ago`, `5d ago`.
pub(crate) fn age(then_ms: i64, now_ms: i64) -> String {
    if then_ms <= 0 {
        return "never".to_owned();
    }
    let secs = (now_ms - then_ms).max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

pub(crate) fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An amount of USD for a table: `$1.50`, `$0.000123`.
pub(crate) fn usd(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 { format!("${v:.6}") } else { format!("${v:.2}") }
}

/// A protobuf enum's name in the file's spelling: `PROVIDER_KIND_OPENAI_COMPATIBLE` with prefix
/// `PROVIDER_KIND_` → `openai_compatible`.
pub(crate) fn enum_name(proto_name: &str, prefix: &str) -> String {
    proto_name.strip_prefix(prefix).unwrap_or(proto_name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_escape() {
        let mut t = Table::new(&["NAME", "KIND", "NOTE"]);
        t.row(vec!["openai".into(), "openai".into(), String::new()]);
        t.row(vec!["v".into(), "openai_compatible".into(), "two\nlines".into()]);
        assert_eq!(
            t.render(),
            "NAME    KIND               NOTE\n\
             openai  openai             -\n\
             v       openai_compatible  two\\nlines\n"
        );
    }

    #[test]
    fn ages_and_amounts() {
        let now = 1_000_000_000;
        assert_eq!(age(now - 4_000, now), "4s ago");
        assert_eq!(age(now - 125_000, now), "2m ago");
        assert_eq!(age(now - 7_300_000, now), "2h ago");
        assert_eq!(age(now - 3 * 86_400_000, now), "3d ago");
        assert_eq!(age(now + 5_000, now), "0s ago");
        assert_eq!(age(0, now), "never");
        assert_eq!(usd(1.5), "$1.50");
        assert_eq!(usd(0.000123), "$0.000123");
        assert_eq!(usd(0.0), "$0.00");
        assert_eq!(enum_name("PROVIDER_KIND_OPENAI_COMPATIBLE", "PROVIDER_KIND_"), "openai_compatible");
        assert_eq!(time(1_798_761_600), "2027-01-01T00:00:00Z");
        assert_eq!(time(0), "");
    }

    #[test]
    fn structured_output() {
        #[derive(Serialize)]
        struct V {
            a: u32,
        }
        let mut out = Vec::new();
        structured(&mut out, Output::Json, &V { a: 1 }).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\n  \"a\": 1\n}\n");
        let mut out = Vec::new();
        structured(&mut out, Output::Yaml, &V { a: 1 }).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a: 1\n");
    }
}
