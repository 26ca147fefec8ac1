//! Readings taken before and after the measured window: the control plane's and etcd's
//! Prometheus counters, and CPU and memory of processes from `/proc`.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// `GET url`, the body as text.
///
/// # Errors
/// A bad URL, no answer within 5 s, a non-200 status.
pub async fn fetch(url: &str) -> anyhow::Result<String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = url.parse().with_context(|| format!("bad metrics URL {url:?}"))?;
    let get = async {
        let resp = client.get(uri).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::ensure!(status.is_success(), "{url}: HTTP {status}");
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .with_context(|| format!("{url}: no answer in 5 s"))?
}

/// The labels of a sample line, `{a="x",b="y"}` without the braces; values may hold escaped
/// quotes and commas.
fn labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let after = &rest[eq + 1..];
        let Some(body) = after.strip_prefix('"') else { break };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = body.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((name, value));
        rest = &body[end.min(body.len())..];
    }
    out
}

/// The sum of every sample of `name` whose labels include all of `want`; `None` when there is
/// no such sample.
#[must_use]
pub fn sum(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || !line.starts_with(name) {
            continue;
        }
        let rest = &line[name.len()..];
        let (labels_text, value_text) = if let Some(l) = rest.strip_prefix('{') {
            let Some(close) = l.rfind('}') else { continue };
            (&l[..close], &l[close + 1..])
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // a longer name with this prefix
        };
        let have = labels(labels_text);
        if !want.iter().all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v)) {
            continue;
        }
        let Some(value) = value_text.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        *total.get_or_insert(0.0) += value;
    }
    total
}

/// A process's CPU time and memory.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub cpu: Duration,
    /// Time its threads were runnable but waiting for a CPU (schedstat), summed over the
    /// threads alive now: how much a busy machine held it back.
    pub run_wait: Duration,
    pub rss_kib: u64,
    /// Peak resident set (`VmHWM`).
    pub hwm_kib: u64,
}

/// Run-queue wait of every thread of `pid`, from `/proc/PID/task/*/schedstat` (its second
/// field, nanoseconds).
fn run_wait(pid: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Duration::ZERO };
    let ns: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1).and_then(|w| w.parse::<u64>().ok()))
        .sum();
    Duration::from_nanos(ns)
}

/// The whole machine's CPU time, busy and total, in clock ticks (`/proc/stat`).
#[derive(Debug, Clone, Copy)]
pub struct MachineStat {
    pub busy: u64,
    pub total: u64,
}

#[must_use]
pub fn machine_stat() -> Option<MachineStat> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = cpu.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some(MachineStat { busy: total - idle, total })
}

/// The 1-minute load average.
#[must_use]
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// utime + stime and memory of `pid` ("self" for this process); `None` when it cannot be read.
#[must_use]
pub fn proc_stat(pid: &str) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields count from the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    // Fields 14 and 15 of proc(5) (utime, stime); index 0 here is field 3 (state).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let per_sec = clock_ticks();
    let cpu = Duration::from_millis(ticks * 1000 / per_sec);
    Some(ProcStat { cpu, run_wait: run_wait(pid), rss_kib: kib("VmRSS:"), hwm_kib: kib("VmHWM:") })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE llmgw_cp_usage_txns_total counter
llmgw_cp_usage_txns_total{kind="write",outcome="committed"} 120
llmgw_cp_usage_txns_total{kind="read",outcome="ok"} 7
llmgw_cp_usage_txns_total{kind="write",outcome="conflict"} 1
llmgw_cp_usage_txns_total_other 99
llmgw_cp_store_call_duration_seconds_count{op="txn",outcome="ok"} 500
llmgw_cp_store_call_duration_seconds_count{op="txn",outcome="error"} 2
llmgw_cp_store_call_duration_seconds_count{op="get",outcome="ok"} 40
grpc_server_handled_total{grpc_code="OK",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 3.5e+03
weird{msg="a \"quoted\", value",op="txn"} 1
etcd_server_proposals_committed_total 12345
"#;

    #[test]
    fn sums_samples_by_name_and_labels() {
        assert_eq!(sum(TEXT, "llmgw_cp_usage_txns_total", &[]), Some(128.0));
        assert_eq!(sum(TEXT, "llmgw_cp_usage_txns_total", &[("kind", "write")]), Some(121.0));
        assert_eq!(
            sum(TEXT, "llmgw_cp_usage_txns_total", &[("kind", "write"), ("outcome", "committed")]),
            Some(120.0)
        );
        assert_eq!(sum(TEXT, "llmgw_cp_store_call_duration_seconds_count", &[("op", "txn")]), Some(502.0));
        assert_eq!(sum(TEXT, "grpc_server_handled_total", &[("grpc_method", "Txn")]), Some(3500.0));
        assert_eq!(sum(TEXT, "weird", &[("op", "txn")]), Some(1.0));
        assert_eq!(sum(TEXT, "etcd_server_proposals_committed_total", &[]), Some(12345.0));
        assert_eq!(sum(TEXT, "absent_total", &[]), None);
    }

    #[test]
    fn reads_this_process() {
        let s = proc_stat("self").unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        let m = machine_stat().unwrap();
        assert!(m.total > 0 && m.busy <= m.total);
    }
}
