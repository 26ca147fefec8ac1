//! Golden-file helpers shared by `anthropic.rs` and `anthropic_client.rs`: fixture discovery,
//! SSE parsing, and JSON comparison with a readable failure message.

// Test code: a failed expectation panics with the file it came from.
#![allow(dead_code, clippy::panic)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `tests/fixtures/anthropic/<sub>`.
pub fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anthropic").join(sub)
}

/// The case names in `dir` with an input file `<case><suffix>`, sorted. Fails when there are
/// none, so a misnamed directory cannot pass silently.
pub fn cases(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(suffix).map(str::to_owned))
        .filter(|n| !n.contains('.'))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no *{suffix} fixtures in {}", dir.display());
    names
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn read_opt(path: &Path) -> Option<Value> {
    path.exists().then(|| read_json(path))
}

/// One SSE event: its `event:` name and its `data:` (lines joined by newlines).
#[derive(Debug, Clone)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

pub fn parse_sse(text: &str) -> Vec<Event> {
    let mut out = Vec::new();
    let mut name = None;
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if !data.is_empty() {
                out.push(Event { name: name.take(), data: data.join("\n") });
                data.clear();
            }
            name = None;
        } else if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    out
}

pub fn read_sse(path: &Path) -> Vec<Event> {
    parse_sse(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Data as JSON (with `created` zeroed and argument strings parsed, so the comparison does
/// not depend on the clock or on key order inside a JSON string), or the literal `[DONE]`.
pub fn comparable(data: &str) -> Value {
    if data == "[DONE]" {
        return Value::String(data.to_owned());
    }
    let mut v: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("not JSON ({e}): {data}"));
    normalize(&mut v);
    v
}

/// Zeroes `created` (checked to be a number first) and replaces each `arguments` string that
/// holds JSON with `{"json": <parsed>}`.
pub fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(c) = m.get_mut("created") {
                assert!(c.is_u64(), "`created` must be a Unix timestamp, got {c}");
                *c = 0.into();
            }
            for (k, x) in m.iter_mut() {
                let parsed = (k == "arguments")
                    .then(|| x.as_str())
                    .flatten()
                    .filter(|s| !s.is_empty())
                    .and_then(|s| serde_json::from_str::<Value>(s).ok());
                match parsed {
                    Some(p) => *x = serde_json::json!({ "json": p }),
                    None => normalize(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

#[track_caller]
pub fn assert_json_eq(case: &str, actual: &Value, expected: &Value) {
    if actual != expected {
        panic!(
            "{case}: translation differs from the golden file\n--- actual\n{}\n--- expected\n{}",
            serde_json::to_string_pretty(actual).unwrap_or_default(),
            serde_json::to_string_pretty(expected).unwrap_or_default()
        );
    }
}

/// Compares emitted events with the golden stream: same count, same `event:` names, same data.
#[track_caller]
pub fn assert_events_eq(case: &str, actual: &[Event], expected: &[Event]) {
    let render = |evs: &[Event]| {
        evs.iter()
            .map(|e| format!("{} {}", e.name.as_deref().unwrap_or("-"), e.data))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let same = actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .all(|(a, e)| a.name == e.name && comparable(&a.data) == comparable(&e.data));
    if !same {
        panic!("{case}: stream differs\n--- actual\n{}\n--- expected\n{}", render(actual), render(expected));
    }
}
