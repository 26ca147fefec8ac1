//! A real etcd for tests: one single-member cluster per [`Etcd`], on free loopback ports, with
//! its own data directory, killed (and its directory removed) on drop.
//!
//! The binary is `$LLMGW_ETCD_BIN`, else `/usr/bin/etcd` (Debian's `etcd-server`), else `etcd`
//! on `PATH`. A missing etcd fails the test: these tests never skip (`./test.sh` installs it).

// A harness that cannot start etcd must fail the test loudly, with the reason.
#![allow(clippy::panic)]

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long etcd may take to answer its health check.
const START_PATIENCE: Duration = Duration::from_secs(30);
/// Fresh ports are tried this many times: another process may take a port between our probe and
/// etcd's bind.
const START_ATTEMPTS: usize = 3;

/// A running etcd member.
pub struct Etcd {
    bin: PathBuf,
    /// Holds the data directory (`data/`) and etcd's log (`etcd.log`).
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Starts etcd and waits until it reports healthy.
    ///
    /// # Panics
    /// If no etcd binary is found, or it does not become healthy in time (the panic message
    /// carries etcd's log).
    pub async fn start() -> Self {
        let mut etcd = Self { bin: etcd_bin(), dir: fresh_dir(), client_port: 0, peer_port: 0, child: None };
        for _ in 0..START_ATTEMPTS {
            (etcd.client_port, etcd.peer_port) = free_ports();
            // A failed attempt may leave a half-initialised member behind.
            let _ = std::fs::remove_dir_all(etcd.data_dir());
            if etcd.launch().await {
                return etcd;
            }
        }
        panic!("etcd exited at start {START_ATTEMPTS} times; log:\n{}", etcd.log());
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client URLs, as a store or a `--etcd-endpoints` flag takes them.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// etcd's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// Kills etcd (SIGKILL) and waits for it to exit; its data stays for [`Etcd::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data, e.g. after [`Etcd::stop`].
    ///
    /// # Panics
    /// If it does not become healthy in time.
    pub async fn restart(&mut self) {
        self.stop();
        if !self.launch().await {
            panic!("etcd exited at restart; log:\n{}", self.log());
        }
    }

    /// Spawns etcd and waits for health: true when healthy, false when it exited (a port clash,
    /// typically). Panics when it neither answers nor exits in time.
    async fn launch(&mut self) -> bool {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap_or_else(|e| panic!("cannot create etcd's log in {}: {e}", self.dir.display()));
        let log2 = log.try_clone().unwrap_or_else(|e| panic!("cannot clone a file handle: {e}"));
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.bin)
            .arg("--name=llmgw-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=llmgw-test={peer}"))
            .arg("--initial-cluster-state=new")
            // Faster leader election for a one-member cluster; the minimum lease TTL becomes 1 s.
            .args(["--heartbeat-interval=50", "--election-timeout=500"])
            .args(["--logger=zap", "--log-outputs=stderr", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            if healthy(self.client_port).await {
                return true;
            }
            if Instant::now() > deadline {
                panic!("etcd did not become healthy within {START_PATIENCE:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET /health` answered `{"health":"true"}`: etcd has a leader and serves reads.
async fn healthy(port: u16) -> bool {
    let probe = async {
        let mut conn = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
        let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        conn.read_to_string(&mut response).await.ok()?;
        Some(response.contains(r#""health":"true""#))
    };
    tokio::time::timeout(Duration::from_secs(2), probe).await.ok().flatten().unwrap_or(false)
}

fn etcd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("LLMGW_ETCD_BIN") {
        return bin.into();
    }
    let debian = Path::new("/usr/bin/etcd");
    if debian.exists() {
        return debian.to_path_buf();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "etcd not found (not /usr/bin/etcd, not on PATH, LLMGW_ETCD_BIN unset): run ./test.sh, \
             which installs Debian's etcd-server"
        )
    })
}

/// Two distinct free loopback ports, as the OS hands them out.
fn free_ports() -> (u16, u16) {
    let bind = || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
    };
    let port =
        |l: &TcpListener| l.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("local_addr: {e}"));
    // Both stay bound until both are known, so they differ.
    let (a, b) = (bind(), bind());
    (port(&a), port(&b))
}

/// A new, empty directory under the system temp dir.
fn fresh_dir() -> PathBuf {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let name = format!("llmgw-etcd-{}-{}-{nanos}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}
