//! Starts the real `llmgw` binary and its peers for end-to-end tests; everything is killed on
//! drop and every wait is on a condition, with a deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// How long any awaited condition may take before the test fails. Generous: CI has 2 cores.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Retries `$cond` (an async expression giving bool) until it holds or `$patience` runs out.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $patience:expr, $($msg:tt)+) => {{
        let deadline = tokio::time::Instant::now() + $patience;
        loop {
            if $cond { break; }
            if tokio::time::Instant::now() > deadline { panic!($($msg)+); }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}

#[derive(Default)]
struct LogBuf {
    lines: Mutex<Vec<String>>,
    changed: Notify,
}

/// A running `llmgw` process.
pub struct Llmgw {
    child: Child,
    logs: Arc<LogBuf>,
    pub http: SocketAddr,
    pub metrics: SocketAddr,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_llmgw")
}

impl Llmgw {
    /// `llmgw edge --config FILE` with `yaml` written to FILE in a fresh directory.
    pub async fn edge(yaml: &str, extra: &[&str]) -> Self {
        Self::edge_env(yaml, extra, &[]).await
    }

    pub async fn edge_env(yaml: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = tmp.path().join("llmgw.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let mut args = vec!["edge", "--config", config.to_str().expect("utf-8 path")];
        args.extend_from_slice(&["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]);
        args.extend_from_slice(extra);
        let mut me = Self::spawn(&args, env, tmp.path()).await;
        me._tmp = Some(tmp);
        me
    }

    /// Starts `llmgw ARGS` with JSON logs, and waits for its "edge listening" line.
    pub async fn spawn(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Self {
        Self::spawn_until(args, env, dir, "edge listening", "http").await
    }

    /// `llmgw control-plane ARGS` on free ports; `http` is then the gRPC address.
    pub async fn control_plane(args: &[&str], env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut all = vec!["control-plane", "--metrics-listen", "127.0.0.1:0"];
        if !args.contains(&"--grpc-listen") {
            all.extend_from_slice(&["--grpc-listen", "127.0.0.1:0"]);
        }
        all.extend_from_slice(args);
        let mut me = Self::spawn_until(&all, env, tmp.path(), "control plane listening", "grpc").await;
        me._tmp = Some(tmp);
        me
    }

    /// `llmgw edge --control-plane URLS` on free ports, waiting until it applied a config.
    pub async fn edge_of(control_planes: &[&Llmgw], extra: &[&str], env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let urls: Vec<String> = control_planes.iter().map(|c| c.grpc_url()).collect();
        let urls = urls.join(",");
        let mut all = vec![
            "edge",
            "--control-plane",
            &urls,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(extra);
        let mut me = Self::spawn_until(&all, env, tmp.path(), "edge listening", "http").await;
        me._tmp = Some(tmp);
        me.wait_ready().await;
        me
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Waits until `/readyz` says 200.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.metrics);
        crate::assert_eventually!(
            reqwest::get(&url).await.is_ok_and(|r| r.status() == 200),
            PATIENCE,
            "{url} never became ready"
        );
    }

    async fn spawn_until(
        args: &[&str],
        env: &[(&str, &str)],
        dir: &Path,
        ready: &str,
        addr_field: &str,
    ) -> Self {
        let mut cmd = Command::new(bin());
        cmd.args(["--log-format", "json"]).args(args).current_dir(dir);
        cmd.env("RUST_LOG", "info").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().expect("start llmgw");
        let logs = Arc::new(LogBuf::default());
        for out in [
            child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lines.lock().unwrap().push(line);
                    logs.changed.notify_waiters();
                }
            });
        }
        let mut me = Self {
            child,
            logs,
            http: "0.0.0.0:0".parse().unwrap(),
            metrics: "0.0.0.0:0".parse().unwrap(),
            dir: dir.to_path_buf(),
            _tmp: None,
        };
        let line = me.wait_log(|l| l["message"] == ready).await;
        me.http = line[addr_field].as_str().unwrap().parse().unwrap();
        me.metrics = line["metrics"].as_str().unwrap().parse().unwrap();
        me
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn base_url(&self) -> String {
        self.url("/v1")
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lines.lock().unwrap().clone()
    }

    /// Waits for a JSON log line matching `pred`, failing the test with the log if none comes.
    pub async fn wait_log(&mut self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut seen = 0;
        loop {
            let notified = self.logs.changed.notified();
            {
                let lines = self.logs.lines.lock().unwrap();
                for l in &lines[seen..] {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
                        && pred(&v)
                    {
                        return v;
                    }
                }
                seen = lines.len();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "llmgw exited ({status}) before the expected log line; log:\n{}",
                    self.logs().join("\n")
                );
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                // One last look: a line may have landed between the check and the wait.
                if tokio::time::Instant::now() >= deadline {
                    panic!("timed out waiting for a log line; log:\n{}", self.logs().join("\n"));
                }
            }
        }
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn signal(&self, sig: &str) {
        let ok =
            std::process::Command::new("kill").args(["-s", sig, &self.pid().to_string()]).status().unwrap();
        assert!(ok.success(), "kill -s {sig} failed");
    }

    /// Waits for the process to exit, failing the test if it takes longer than `patience`.
    pub async fn wait_exit(&mut self, patience: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(patience, self.child.wait()).await.expect("llmgw did not exit in time").unwrap()
    }

    /// A Prometheus sample's value: the sum over series of `name` whose labels contain every
    /// `label="value"` given.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text =
            reqwest::get(format!("http://{}/metrics", self.metrics)).await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// The official SDKs' interpreter: the venv `./test.sh` makes, or `LLMGW_TEST_PYTHON`.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("LLMGW_TEST_PYTHON") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run ./test.sh, which creates the venv with the official SDKs",
        p.display()
    );
    p
}

/// Runs a Python script from `tests/python/` with the venv's interpreter, failing the test with
/// its output if it exits non-zero.
pub async fn run_python(script: &str, env: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let mut cmd = Command::new(python());
    cmd.arg(&path).stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("python timed out")
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed:\n{text}");
    text
}

/// What `llmgw admin …` did.
pub struct AdminRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl AdminRun {
    pub fn json(&self) -> serde_json::Value {
        assert!(self.ok, "admin command failed: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `llmgw admin --endpoint URL --token TOKEN ARGS`.
pub async fn admin(endpoint: &str, token: &str, args: &[&str]) -> AdminRun {
    let mut cmd = Command::new(bin());
    cmd.args(["admin", "--endpoint", endpoint, "--token", token]).args(args);
    cmd.env_remove("LLMGW_ADMIN_TOKEN").env_remove("LLMGW_ENDPOINT").stdin(Stdio::null()).kill_on_drop(true);
    let out =
        tokio::time::timeout(Duration::from_secs(120), cmd.output()).await.expect("admin timed out").unwrap();
    AdminRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
