//! The daemon two ways: [`InProcessDaemon`], `christmas_ingest`'s server run in this process
//! (what `christmas-ingest serve` runs, without a process boundary), and [`DaemonProcess`],
//! the real binary: spawned, waited for until it answers, stopped with a signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use christmas_ingest::config::DaemonConfig;
use christmas_ingest::server::{self, AppState};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http::HttpClient;

/// `christmas_ingest`'s server on loopback ports in this process; [`InProcessDaemon::stop`]
/// takes SIGTERM's path (stop accepting, drain, flush).
#[derive(Debug)]
pub struct InProcessDaemon {
    http: SocketAddr,
    tcp: Option<SocketAddr>,
    ops: Option<SocketAddr>,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl InProcessDaemon {
    /// Starts the daemon of `config` on a free loopback HTTP port, a TCP ingest port too
    /// when `with_tcp`, and an operations port when `config.ops.addr` is set (to anything);
    /// each listens with the backlog `serve` gives it. The config's own addresses are
    /// replaced by the ones bound.
    pub async fn start(mut config: DaemonConfig, with_tcp: bool) -> Result<InProcessDaemon> {
        let http = server::listen("127.0.0.1:0", config.http.max_connections).await?;
        let tcp = match with_tcp {
            true => Some(server::listen("127.0.0.1:0", config.tcp.max_connections).await?),
            false => None,
        };
        let ops = match config.ops.addr.is_empty() {
            true => None,
            false => Some(server::listen("127.0.0.1:0", config.ops.max_connections).await?),
        };
        let http_addr = http.local_addr()?;
        let tcp_addr = tcp.as_ref().map(|t| t.local_addr()).transpose()?;
        let ops_addr = ops.as_ref().map(|t| t.local_addr()).transpose()?;
        config.http.addr = http_addr.to_string();
        config.tcp.addr = tcp_addr.map(|a| a.to_string()).unwrap_or_default();
        config.ops.addr = ops_addr.map(|a| a.to_string()).unwrap_or_default();
        let state = AppState::start(config).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(server::run_with_ops(http, tcp, ops, state.clone(), stopped));
        Ok(InProcessDaemon {
            http: http_addr,
            tcp: tcp_addr,
            ops: ops_addr,
            state,
            stop: Some(stop),
            task,
        })
    }

    /// Where it serves HTTP.
    pub fn http(&self) -> SocketAddr {
        self.http
    }

    /// Where it takes TCP ingest frames, when started with TCP.
    pub fn tcp(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Where it serves /health, /ready and /metrics alone, when started with `ops.addr`.
    pub fn ops(&self) -> Option<SocketAddr> {
        self.ops
    }

    /// The daemon's state (its engines, desk and metrics).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A client of its HTTP port, a connection per request.
    pub fn client(&self) -> HttpClient {
        HttpClient::new(self.http)
    }

    /// SIGTERM's path: stop accepting, finish what is in flight, flush; the server's result.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await.context("the daemon task panicked")?
    }
}

/// The `christmas-ingest` binary as a child process, stopped with SIGTERM (then SIGKILL after
/// 30 s) when dropped while still running.
#[derive(Debug)]
pub struct DaemonProcess {
    child: Child,
    http: SocketAddr,
    tcp: Option<SocketAddr>,
}

/// How long a stopped daemon gets to drain and flush before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

impl DaemonProcess {
    /// The `christmas-ingest` binary of this build (next to the running test or bench
    /// binary's directory), built with `cargo build -p christmas-ingest` first when missing.
    pub fn binary() -> Result<PathBuf> {
        let exe = std::env::current_exe()?;
        let dir = exe
            .parent()
            .context("no directory for the running binary")?;
        // Test binaries live in target/<profile>/deps, the daemon in target/<profile>.
        let dir = if dir.ends_with("deps") {
            dir.parent().context("no profile directory")?
        } else {
            dir
        };
        let bin = dir.join("christmas-ingest");
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let release = dir.ends_with("release");
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "christmas-ingest"]);
            if release {
                build.arg("--release");
            }
            let built = build.status().context("running cargo build")?;
            anyhow::ensure!(built.success(), "cargo build -p christmas-ingest failed");
        }
        Ok(bin)
    }

    /// Resident memory of the process now and at its peak, in bytes (`VmRSS`, `VmHWM`).
    pub fn memory(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("no {name} in /proc/<pid>/status"))?;
            let kb: u64 = line
                .split_whitespace()
                .nth(1)
                .context("an empty memory line")?
                .parse()?;
            Ok(kb * 1024)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
    /// Spawns `binary serve` with HTTP on `http` and TCP ingest on `tcp` (off when `None`),
    /// `CHRISTMAS_CONFIG` unset and stdin, stdout and stderr closed; `setup` adds flags
    /// (`--config`), environment and where the output goes. Not yet ready: see
    /// [`DaemonProcess::wait_ready`].
    pub fn spawn(
        binary: &Path,
        http: SocketAddr,
        tcp: Option<SocketAddr>,
        setup: impl FnOnce(&mut Command),
    ) -> Result<DaemonProcess> {
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg("--http-addr")
            .arg(http.to_string())
            .arg("--tcp-addr")
            .arg(tcp.map(|a| a.to_string()).unwrap_or_default())
            .env_remove("CHRISTMAS_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        setup(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(DaemonProcess { child, http, tcp })
    }

    /// Where it serves HTTP.
    pub fn http(&self) -> SocketAddr {
        self.http
    }

    /// Where it takes TCP ingest frames, when it does.
    pub fn tcp(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `GET /health` answers 200 and the TCP port (if any) accepts, up to
    /// `timeout`; an error as soon as the process exits instead.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let client = HttpClient::new(self.http);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the daemon on {} exited ({status}) before it was ready",
                    self.http
                );
            }
            let healthy = client.get("/health").await.is_ok_and(|r| r.status == 200);
            let tcp_open = match self.tcp {
                Some(a) => tokio::net::TcpStream::connect(a).await.is_ok(),
                None => true,
            };
            if healthy && tcp_open {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!(
                    "the daemon on {} was not ready within {timeout:?}",
                    self.http
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` (`TERM`, `KILL`, …) with `kill(1)`.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .context("running kill")?;
        anyhow::ensure!(sent.success(), "kill -{signal} {} failed", self.child.id());
        Ok(())
    }

    /// Waits (blocking) up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon on {} did not exit within {timeout:?}",
                    self.http
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (blocking, without limit) for the process to exit.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        Ok(self.child.wait()?)
    }

    /// SIGTERM, then up to 30 s to drain and exit, then SIGKILL; nothing when it has exited
    /// already. Its exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.child.try_wait()? {
            return Ok(s);
        }
        self.signal("TERM")?;
        match self.wait_exit(STOP_GRACE) {
            Ok(s) => Ok(s),
            Err(e) => {
                eprintln!("{e}; killing it");
                self.child.kill()?;
                Ok(self.child.wait()?)
            }
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
